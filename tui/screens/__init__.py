"""One screen per wizard step, plus the resume prompt and the file picker."""
