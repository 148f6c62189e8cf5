"""Self-supervised training of the project's own ``dexwm_vit`` encoder on simulator frames.

Recipe: a masked autoencoder (:mod:`.mae`; 75% of the patches hidden, per-patch normalised pixel targets, a
2-block decoder of width 128), trained on frames of exploratory simulator episodes (:mod:`.frames`) by
``dexwm train encoder`` (:mod:`.train`). :mod:`.probe` measures what the frozen tokens hold with linear (ridge)
probes to hand keypoints and object positions, against the same architecture with random weights and raw pixels.
"""
