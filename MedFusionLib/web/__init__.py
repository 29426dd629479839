"""The browser review app (medfusion serve) on trame-slicer; an optional extra."""
