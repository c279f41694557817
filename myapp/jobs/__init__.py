"""Jobs: long work a request starts and a worker does, with progress its owner can follow."""
