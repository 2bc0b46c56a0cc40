"""The desktop app (PySide6). All VM logic lives in ``sandbox_app.core``."""
