//! sculpt-report turns a campaign's stored trials into what a stakeholder reads: the
//! accuracy-latency Pareto front (`pareto.svg`, drawn with plotters), a Markdown summary
//! (`summary.md`), and the choice of configuration under a latency budget. It reads trial
//! records; it never trains or measures anything. It also draws sensitivity tables
//! (`sensitivity.svg`).

pub mod error;
pub mod figures;
pub mod html;
pub mod plot;
pub mod select;
pub mod sensitivity;
pub mod summary;

pub use error::{ReportError, Result};
pub use html::{write_html_report, CampaignReport, ReportFiles};
pub use plot::{plot_hypervolume_curves, plot_pareto, plot_validation};
pub use select::{
    best_under_budget, hypervolume, pareto_indices, select, Constraints, Prefer, Selection,
};
pub use sensitivity::{plot_sensitivity, sensitivity_text};
pub use summary::{configuration, render_summary, write_report, Report};
