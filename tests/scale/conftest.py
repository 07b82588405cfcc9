"""The e2e stack fixture, shared with the scale tests (imported, so that there is one definition of the stack)."""

from tests.e2e.conftest import stack_factory

__all__ = ["stack_factory"]
