"""Caption data: named sources read into records, records checked, then batches (`loading` ties them together)."""
