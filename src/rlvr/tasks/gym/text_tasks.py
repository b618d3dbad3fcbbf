"""Task gym: placeholder, filled in by the gym work (issue 3)."""
