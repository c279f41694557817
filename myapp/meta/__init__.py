"""Meta: facts about the API itself (the error-code catalog)."""
