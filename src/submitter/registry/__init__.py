"""The model registry: named models, their versions (files in the store) and aliases."""
