"""Stand-in for scicode.parse.parse: targets come from the harness, not from test_data.h5."""
import _scicode_runtime


def process_hdf5_to_tuple(step_id, test_num, *args, **kwargs):
    """The decoded targets the harness sent for this job (the first test_num of them)."""
    return list(_scicode_runtime.TARGETS[:int(test_num)])
