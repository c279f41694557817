"""Files: uploads streamed to blob storage, ranged downloads, deletion through events."""
