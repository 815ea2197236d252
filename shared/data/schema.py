"""The MEDS data contract, in one place.

Field names, dtypes, split names and file layout come from the `meds` package
(MEDS 0.4); the rest of fedehr imports them from here instead of repeating
strings. Datasets written in the 0.3 era (the public anchor says
meds_version 0.3.3) have the same core columns and are accepted.
"""

from __future__ import annotations

import meds
import pyarrow as pa

SUBJECT_ID = meds.DataSchema.subject_id_name  # "subject_id"
TIME = meds.DataSchema.time_name  # "time"
CODE = meds.DataSchema.code_name  # "code"
NUMERIC_VALUE = meds.DataSchema.numeric_value_name  # "numeric_value"
TEXT_VALUE = meds.DataSchema.text_value_name  # "text_value"

BIRTH_CODE = meds.birth_code  # "MEDS_BIRTH"
DEATH_CODE = meds.death_code  # "MEDS_DEATH"

TRAIN = meds.train_split
TUNING = meds.tuning_split
HELD_OUT = meds.held_out_split
SPLITS = (TRAIN, TUNING, HELD_OUT)

DATA_DIR = meds.data_subdirectory  # "data"
CODES_FILE = meds.code_metadata_filepath  # "metadata/codes.parquet"
SPLITS_FILE = meds.subject_splits_filepath  # "metadata/subject_splits.parquet"
DATASET_FILE = meds.dataset_metadata_filepath  # "metadata/dataset.json"

MEDS_VERSION = "0.4.1"
ACCEPTED_MEDS_VERSIONS = ("0.3", "0.4")  # prefixes of dataset.json meds_version

# The core data schema: the four columns fedehr writes for every event.
# (`numeric_value` is float32, `text_value` a large_string, as in meds 0.4.)
DATA_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field(SUBJECT_ID, pa.int64(), nullable=False),
        pa.field(TIME, pa.timestamp("us")),
        pa.field(CODE, pa.string(), nullable=False),
        pa.field(NUMERIC_VALUE, pa.float32()),
        pa.field(TEXT_VALUE, pa.large_string()),
    ]
)
REQUIRED_COLUMNS = (SUBJECT_ID, TIME, CODE)

CODES_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("code", pa.string(), nullable=False),
        pa.field("description", pa.string()),
        pa.field("parent_codes", pa.list_(pa.string())),
    ]
)

SPLITS_SCHEMA: pa.Schema = pa.schema(
    [pa.field(SUBJECT_ID, pa.int64(), nullable=False), pa.field("split", pa.string())]
)

LABEL_SCHEMA: pa.Schema = meds.LabelSchema.schema()
