"""Single-cell RNA denoising: the scientific core of OpenProblems' denoising task.

Data (`data`), the molecular cross-validation split (`split`), the MSE and Poisson metrics with
their no-denoise/perfect normalisation (`metrics`), reference denoisers (`references`) and the
scoring entry point (`evaluate`). See README.md in this folder for the exact formulas."""
