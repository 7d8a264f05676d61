"""What a model is fed, built one way for training and for application.

A participant's cached runs become model input through these modules only: which windows of a
run are read (:mod:`~m2m_bids.model_inputs.windows`), how the windows, images, maps and tabular
rows become batch tensors and reach the model (:mod:`~m2m_bids.model_inputs.batch`), and how
participants.tsv rows become tabular features (:mod:`~m2m_bids.model_inputs.tabular`). Training
and ``apply`` both call them, so a participant applied later is fed exactly what evaluation fed it.
"""
