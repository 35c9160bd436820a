"""robustmm: is a prompt-tuned vision-language model more or less robust than a finetuned one?

Cheap to import: the heavy parts (torch models, attacks) load in their own modules.

    from robustmm.data import load_dataset
    from robustmm.metrics import vqa_accuracy
"""

from robustmm.errors import RobustMMError
from robustmm.types import Example, Task

__version__ = "0.1.0"
__all__ = ["RobustMMError", "Example", "Task", "__version__"]
