"""Service: what the app and the command line call. The Studio facade, background jobs and the
CLI. Imports every layer below it."""
