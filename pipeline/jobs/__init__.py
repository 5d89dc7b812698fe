"""What a command does, composed from the stages and tracking: one run (`training`)."""
