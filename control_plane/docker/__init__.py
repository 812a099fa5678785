"""Docker-managed services: the engine (engine.py, the one module that talks to aiodocker), what is stored
about a service (spec.py, records.py), the controller's pure decisions (reconcile.py, container_config.py,
images.py, stats.py), and its shells (controller.py, workflow.py, worker.py)."""
