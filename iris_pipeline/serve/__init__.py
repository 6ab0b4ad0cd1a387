"""Serving the chain over HTTP on Ray Serve (`iris serve`) and load-testing it (`iris loadtest`).

    config.py       the `serving` section of the pipeline config (pure pydantic, no Ray)
    deployments.py  one Serve deployment per stage group, each running the stages' own code
    remote.py       stand-ins that give the in-process `Pipeline` those deployments as its stages
    registry.py     voices and avatars by content hash; finished renders on disk
    app.py          the FastAPI ingress and the application builder (`serve deploy` imports it)
    launch.py       embedded Ray / an existing cluster, and the Serve config YAML
    loadtest/       Locust, headless, writing `iris bench`'s CSV schema

Only `config` is imported by the rest of the package; everything else imports Ray.
"""
