//! Tests of the Helm chart in `charts/muster`; everything lives in `tests/`.
