//! @project@'s step types next to Sluice's built-in ones: the registry this project's
//! binary (src/main.rs) runs applications with, validates them against and publishes
//! (`sluice schema step`, `GET /steps`, `infra/catalogue.json`).

use sluice_sdk::StepRegistry;

/// Every step type of the project: Sluice's built-in ones and the project's own.
pub fn registry() -> StepRegistry {
    let mut registry = sluice_steps::builtin_registry();
    // The project's step types (`sluice new step` adds them above this line).
    registry
}
