//! Jobs as tests build them: inputs laid out from a model directory alone.

use std::path::Path;

use olc_content::JobInputs;
use olc_protocol::ContentId;

/// The inputs of a job that reads only its model, laid out in `model`.
pub fn model_inputs(model: &Path, model_id: ContentId) -> JobInputs {
    JobInputs {
        model_dir: model.to_path_buf(),
        model_id,
        adapter_dir: None,
        adapter_id: None,
        dataset_path: None,
        init_adapter_dir: None,
    }
}
