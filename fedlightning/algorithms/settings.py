"""Constructor arguments captured automatically, as ``save_hyperparameters`` does for modules.

Every :class:`~fedlightning.algorithms.Algorithm` subclass has its ``__init__`` wrapped by
:func:`capture_init` when the class is defined: the arguments of the outermost call are bound
to the signature, defaults filled in, and stored on the instance; each ``super().__init__``
below it adds the arguments it received that the outer call did not name (a subclass taking
``**kwargs`` records its parent's defaults too). No class writes its own ``__repr__`` or
config: both come from these arguments, so two algorithms that differ in any constructor
argument differ in their recorded settings.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

__all__ = ["capture_init", "format_settings", "render"]

_ARGS = "_init_args"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def capture_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap ``init`` so that the instance records the arguments it was built with.

    Args:
        init: An ``__init__`` method.

    Returns:
        The wrapped method; the arguments are in ``instance.__dict__["_init_args"]``.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        recorded: dict[str, Any] = self.__dict__.setdefault(_ARGS, {})
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:
            init(self, *args, **kwargs)  # let the original raise its own error
            return
        bound.apply_defaults()
        for index, (name, value) in enumerate(bound.arguments.items()):
            if index == 0:
                continue  # self
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                for key, item in value.items():
                    recorded.setdefault(key, item)
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                recorded.setdefault(name, list(value))
            else:
                recorded.setdefault(name, value)
        init(self, *args, **kwargs)

    wrapper.__fl_captures__ = True  # type: ignore[attr-defined]
    return wrapper


def render(value: Any) -> Any:
    """A JSON-friendly form of a setting: numbers, strings and lists as they are, tensors by
    shape and dtype, anything else by its ``repr``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [render(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): render(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={list(value.shape)}, dtype={value.dtype})"
    if isinstance(value, functools.partial):
        func = getattr(value.func, "__qualname__", repr(value.func))
        params = [repr(a) for a in value.args]
        params += [f"{k}={v!r}" for k, v in value.keywords.items()]
        return f"{func}({', '.join(params)})"
    if inspect.isclass(value) or inspect.isfunction(value):
        return f"{value.__module__}.{value.__qualname__}"
    # Default reprs hold a memory address, which differs between two runs of one setting.
    return _ADDRESS.sub("", repr(value))


def format_settings(name: str, settings: Mapping[str, Any]) -> str:
    """``Name(a=1, b='x')`` from recorded settings."""
    parts = []
    for key, value in settings.items():
        shown = render(value)
        parts.append(f"{key}={shown}" if not isinstance(shown, str) else f"{key}={_short(value)}")
    return f"{name}({', '.join(parts)})"


def _short(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    shown = render(value)
    return shown if isinstance(shown, str) else repr(shown)
