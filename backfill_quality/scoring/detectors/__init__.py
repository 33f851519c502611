"""Subject detectors: where the bird is, how many, how much of it the frame shows."""
