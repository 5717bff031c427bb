from tests.real.conftest import real_node

__all__ = ["real_node"]
