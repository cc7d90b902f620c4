"""mobilenets: efficient convolutional networks for mobile vision (Howard et al., 2017)."""

from mobilenets.errors import MobileNetsError
from mobilenets.models import create_model, list_models
from mobilenets.profile import profile

__version__ = "0.1.0"
__all__ = ["MobileNetsError", "create_model", "list_models", "profile"]
