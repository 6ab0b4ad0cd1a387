"""Load tests of a served chain: a Locust file (run headless) and the runner that writes
`iris bench`'s files from its renders."""
