"""Models behind ``--arch``: SwiFT 4D Swin encoders, M2M-AlignNet and the SwiFT EF/LF baselines.

Only torch is imported here (no neuroimaging stack), so the models run on a bare GPU machine.

    from m2m_bids.models import create_model, list_models, ModelOutput
    model = create_model("m2m", num_classes=2, img_size=(64, 64, 64), frames=20, n_tabular=4)
    out = model(fmri=fmri, smri=smri, tabular=tab)   # ModelOutput
"""

from m2m_bids.models import m2m as _m2m  # noqa: F401  (registers "m2m")
from m2m_bids.models import swift as _swift  # noqa: F401  (registers the SwiFT baselines)
from m2m_bids.models import baselines as _baselines  # noqa: F401  (registers the CNN-RNN baselines)
from m2m_bids.models.config import MAP_INPUTS, PRESETS, ModelConfig, valid_keys
from m2m_bids.models.losses import m2m_contrastive_loss
from m2m_bids.models.parcellation import Parcellation
from m2m_bids.models.registry import (ModelOutput, create_config, create_model, input_maps, input_modalities,
                                      list_models, model_config, model_info, reads_parcellation, register_model)

__all__ = ["MAP_INPUTS", "PRESETS", "ModelConfig", "ModelOutput", "Parcellation", "create_config", "create_model",
           "input_maps", "input_modalities", "list_models", "m2m_contrastive_loss", "model_config", "model_info",
           "reads_parcellation", "register_model", "valid_keys"]
