"""Built-in provider plugins. They use the same hooks as any third-party plugin."""
