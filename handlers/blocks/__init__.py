"""Pure Block Kit builders: catalog objects in, `Message` / view dicts out. No I/O, no Slack calls."""
