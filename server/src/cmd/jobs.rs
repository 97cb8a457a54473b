//! `job.status` and `job.list`: jobs as this server knows them. A client sees its own
//! jobs; a role with `jobs = "all"` sees everyone's; another client's job is, to anyone
//! else, as unknown as a job that never was.

use cmdchan_common::protocol::{self, Reply};

use crate::admit::{Admitted, Refusal};
use crate::jobs::Jobs;
use crate::policy::Policy;

pub async fn status(cmd: &Admitted<'_>, policy: &Policy, jobs: &Jobs) -> Result<Reply, Refusal> {
    let all = policy.reads_all_jobs(&cmd.grant().role);
    // Admission checked every argument is a job ID.
    let ids: Vec<_> = cmd
        .args()
        .iter()
        .filter_map(|a| protocol::parse_id(a))
        .collect();
    match jobs.infos(&ids, cmd.client().as_str(), all).await {
        Ok(infos) => Ok(Reply::Jobs(infos)),
        Err(e) => Err(Refusal::JobsUnavailable(e.to_string())),
    }
}

pub async fn list(cmd: &Admitted<'_>, policy: &Policy, jobs: &Jobs) -> Result<Reply, Refusal> {
    let all = policy.reads_all_jobs(&cmd.grant().role);
    match jobs.list(cmd.client().as_str(), all).await {
        Ok(infos) => Ok(Reply::Jobs(infos)),
        Err(e) => Err(Refusal::JobsUnavailable(e.to_string())),
    }
}
