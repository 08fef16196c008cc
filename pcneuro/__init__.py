"""pcneuro: simulate learning experiments under predictive coding and backprop.

Song et al., "Inferring neural activity before plasticity as a foundation for learning beyond
backpropagation", Nature Neuroscience 2024.

    >>> import pcneuro
    >>> pcneuro.list_paradigms()                      # registered names
    >>> ds = pcneuro.run("fear_conditioning", rule="pc", seeds=2, write=False)
"""
__version__ = "0.1.0"

from .paradigm import FitSpec, Hyper, Measure, Paradigm, Preset  # noqa: E402
from .registry import UnknownParadigmError, list_paradigms, make, paradigm_class, register  # noqa: E402
from .runner import make_plan, run  # noqa: E402

__all__ = ["FitSpec", "Hyper", "Measure", "Paradigm", "Preset", "UnknownParadigmError", "list_paradigms", "make",
           "paradigm_class", "register", "make_plan", "run", "__version__"]
