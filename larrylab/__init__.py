"""larrylab: an evaluation-first A/B experimentation platform for Larry, the PWS coach."""

import os

__version__ = "0.1.0"

# litellm fetches its model cost map from GitHub at import unless told not to; larrylab must
# start offline (and quickly), so use the map bundled with litellm unless the user says otherwise.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
