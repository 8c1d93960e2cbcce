"""Process definitions in and out as one JSON document: copy-exact between fabs, and process
definitions under version control."""
