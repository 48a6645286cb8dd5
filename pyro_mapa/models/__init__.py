"""What a user's model uses: decoding distinct codes, a gathered Gaussian likelihood,
starting codes, and the final model's fitted prior (docs/math.md, section 1)."""

from .decode import decode, decode_unique
from .gathered import GatheredNormal
from .initialization import pca_codes
from .priors import fit_prior

__all__ = ["GatheredNormal", "decode", "decode_unique", "fit_prior", "pca_codes"]
