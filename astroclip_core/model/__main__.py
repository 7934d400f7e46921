"""``python -m astroclip_core.model``: print the preset table with parameter counts."""

from astroclip_core.model.config import describe_presets

print(describe_presets())
