"""Client selection as plug-ins, one module each over ``base.Selector``; this is their registry.

To add one: write ``service/federated/selectors/<name>.py`` with a ``Selector`` subclass (its ``name``
and ``title``, its ``pick``, and ``feedback`` if it learns from the rounds), its test in
``tests/federated/selectors/test_<name>.py``, and list the class in ``SELECTORS`` below. The rounds API
takes every name listed here.
"""

from __future__ import annotations

from service.errors import InvalidRequest
from service.federated.selectors.available import Available
from service.federated.selectors.base import Selector, SelectorSettings
from service.federated.selectors.oort import Oort
from service.federated.selectors.poisson import Poisson
from service.federated.selectors.uniform import Uniform

SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in (Available, Uniform, Oort, Poisson)}
NAMES: tuple[str, ...] = tuple(SELECTORS)
DEFAULT = Available.name


def make(name: str, settings: SelectorSettings | None = None, seed: int = 0) -> Selector:
    """Selector ``name`` for a run seeded ``seed``, its settings checked; InvalidRequest naming an
    unknown one."""
    found = SELECTORS.get(name)
    if found is None:
        raise InvalidRequest(f"unknown selection {name!r}; choose one of {', '.join(NAMES)}")
    selector = found(settings or SelectorSettings(), seed)
    selector.check()
    return selector
