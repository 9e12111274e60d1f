"""The ordered chain of steps that brings Anemoi metadata to the current version.

May import: ``compat.migrate.base`` and ``errors`` only: each step is a pure function of a document.

Order matters: the dataset fixes (m01-m03) work on the old layouts, m05 and
m06 then change the layout. To add a step, write ``mNN_<what>.py`` with a
``STEP`` and add it to :data:`ANEMOI_METADATA_STEPS` (see README, Contributing).
"""

from __future__ import annotations

from anemoi_ckpt_nb.compat.migrate.steps import (
    m01_dataset_list_to_dict,
    m02_dataset_version_ecml_tools,
    m03_variables_metadata_mars,
    m04_module_versions_as_dicts,
    m05_legacy_to_v1,
    m06_single_to_multi_dataset,
)

ANEMOI_METADATA_STEPS = (
    m01_dataset_list_to_dict.STEP,
    m02_dataset_version_ecml_tools.STEP,
    m03_variables_metadata_mars.STEP,
    m04_module_versions_as_dicts.STEP,
    m05_legacy_to_v1.STEP,
    m06_single_to_multi_dataset.STEP,
)
