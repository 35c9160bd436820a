"""``python -m robustmm ...`` (and ``torchrun ... -m robustmm attack ...``): the same command line as ``robustmm``."""

from robustmm.cli import main

if __name__ == "__main__":
    main()
