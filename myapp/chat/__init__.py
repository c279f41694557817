"""Chat: rooms, members, messages stored exactly once per clientMsgId, cursor history."""
