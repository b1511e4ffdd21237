"""minibert: BERT knowledge distillation from first principles, in pure NumPy.

The core (layers, attention, model, losses, optim, gradcheck) is pure functions on arrays.
See minibert/INTERFACES.md for the names and shapes every module agrees on.
"""

__version__ = "0.1.0"
