//! torchrun's launch contract: a process started with `WORLD_SIZE`, `RANK`, `LOCAL_RANK`,
//! `MASTER_ADDR` and `MASTER_PORT` in its environment is one rank of a group; `--nproc-per-node N`
//! (with `--nnodes`, `--node-rank`, `--master-addr`, `--master-port` for several machines) makes the
//! command start its local ranks itself, as torchrun does, by running the same command line again
//! with that environment. Under Slurm, a task of an `srun` step with several tasks is a rank too
//! ([`slurm_env`]), so `srun --ntasks 8 classify train ...` needs no torchrun.

use std::process::{Child, Command};
use std::time::Duration;

use super::{DistError, GroupOptions};

/// The launcher flags of a `train` command (torchrun's names).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct LaunchArgs {
    /// Data-parallel training: start this many worker processes on this machine (torchrun's flag).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nproc_per_node: usize,
    /// Number of machines taking part (each runs the same command with its own --node-rank).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's index in `0..nnodes`; node 0 hosts the rendezvous.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of node 0, reachable from every machine.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Free port on node 0 for the rendezvous.
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
}

impl Default for LaunchArgs {
    fn default() -> Self {
        LaunchArgs { nproc_per_node: 1, nnodes: 1, node_rank: 0, master_addr: "127.0.0.1".into(), master_port: 29500 }
    }
}

/// What a `train` command is in a launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// One process, no group.
    Single,
    /// A rank of a group (started by torchrun, by Slurm's `srun` with torchrun's variables, or by
    /// [`launch_local`]).
    Worker(WorkerEnv),
    /// Start `nproc_per_node` workers with [`launch_local`] and wait for them.
    Launcher,
}

/// The torchrun variables of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerEnv {
    /// Global rank (`RANK`).
    pub rank: usize,
    /// Rank on this machine (`LOCAL_RANK`).
    pub local_rank: usize,
    /// Number of ranks (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rendezvous address (`MASTER_ADDR`).
    pub master_addr: String,
    /// Rendezvous port (`MASTER_PORT`).
    pub master_port: u16,
}

impl WorkerEnv {
    /// The group this worker joins, whose collectives fail after `timeout`.
    pub fn group_options(&self, timeout: Duration) -> GroupOptions {
        GroupOptions {
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
            rank: self.rank,
            world_size: self.world_size,
            timeout,
            bind_host: None,
        }
    }
}

/// Reads torchrun's variables through `var`; `None` when `WORLD_SIZE` is unset.
pub fn worker_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<WorkerEnv>, DistError> {
    let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
    let number = |name: &str, default: Option<&str>| -> Result<usize, DistError> {
        let value = var(name)
            .or(default.map(str::to_string))
            .ok_or_else(|| DistError::Invalid(format!("WORLD_SIZE is set but {name} is not (torchrun sets both)")))?;
        value.trim().parse().map_err(|_| DistError::Invalid(format!("{name}={value} is not a non-negative integer")))
    };
    let world_size: usize = world
        .trim()
        .parse()
        .map_err(|_| DistError::Invalid(format!("WORLD_SIZE={world} is not a positive integer")))?;
    let rank = number("RANK", None)?;
    let local_rank = number("LOCAL_RANK", Some("0"))?;
    let master_port = number("MASTER_PORT", None)?;
    let master_addr = var("MASTER_ADDR")
        .ok_or_else(|| DistError::Invalid("WORLD_SIZE is set but MASTER_ADDR is not (torchrun sets both)".into()))?;
    let master_port = u16::try_from(master_port)
        .map_err(|_| DistError::Invalid(format!("MASTER_PORT={master_port} is not a port number")))?;
    if world_size == 0 || rank >= world_size {
        return Err(DistError::Invalid(format!("RANK={rank} is not in a world of WORLD_SIZE={world_size}")));
    }
    Ok(Some(WorkerEnv { rank, local_rank, world_size, master_addr, master_port }))
}

/// Rendezvous port under Slurm when `MASTER_PORT` is unset (torchrun's default).
pub const SLURM_DEFAULT_PORT: u16 = 29500;

/// Reads Slurm's variables through `var`: inside an `srun` step (`SLURM_STEP_ID` set) of more than one
/// task, rank `SLURM_PROCID` of `SLURM_STEP_NUM_TASKS` (else `SLURM_NTASKS`), local rank
/// `SLURM_LOCALID`; the rendezvous is `MASTER_ADDR` / `MASTER_PORT` when set, else the first host of
/// `SLURM_STEP_NODELIST` (else `SLURM_JOB_NODELIST`) and [`SLURM_DEFAULT_PORT`]. `None` outside a step,
/// so that a batch script, which also has `SLURM_PROCID`, runs as one process.
pub fn slurm_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<WorkerEnv>, DistError> {
    if var("SLURM_STEP_ID").is_none() {
        return Ok(None);
    }
    let Some((tasks_name, tasks)) =
        ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"].into_iter().find_map(|n| var(n).map(|v| (n, v)))
    else {
        return Ok(None);
    };
    let number = |name: &str, value: &str| -> Result<usize, DistError> {
        value.trim().parse().map_err(|_| DistError::Invalid(format!("{name}={value} is not a non-negative integer")))
    };
    let world_size = number(tasks_name, &tasks)?;
    if world_size <= 1 {
        return Ok(None);
    }
    let rank = number("SLURM_PROCID", &var("SLURM_PROCID").unwrap_or_default())?;
    let local_rank = number("SLURM_LOCALID", &var("SLURM_LOCALID").unwrap_or_else(|| "0".into()))?;
    if rank >= world_size {
        return Err(DistError::Invalid(format!("SLURM_PROCID={rank} is not in a step of {tasks_name}={world_size}")));
    }
    let master_addr = match var("MASTER_ADDR") {
        Some(addr) => addr,
        None => {
            let list = var("SLURM_STEP_NODELIST").or_else(|| var("SLURM_JOB_NODELIST")).unwrap_or_default();
            first_host(&list).ok_or_else(|| {
                DistError::Invalid(format!(
                    "under Slurm with {tasks_name}={world_size}: no MASTER_ADDR and no host in SLURM_STEP_NODELIST or SLURM_JOB_NODELIST ({list:?})"
                ))
            })?
        }
    };
    let master_port = match var("MASTER_PORT") {
        Some(port) => {
            port.trim().parse().map_err(|_| DistError::Invalid(format!("MASTER_PORT={port} is not a port number")))?
        }
        None => SLURM_DEFAULT_PORT,
    };
    Ok(Some(WorkerEnv { rank, local_rank, world_size, master_addr, master_port }))
}

/// The first host of a Slurm host list: `gpu[07-12,15],cpu3` → `gpu07` (each bracket group gives its
/// first number, zero padding kept). `None` for an empty or malformed list.
pub fn first_host(list: &str) -> Option<String> {
    let mut host = String::new();
    let mut rest = list.trim();
    loop {
        let stop = rest.find(['[', ',']).unwrap_or(rest.len());
        host.push_str(&rest[..stop]);
        if !rest[stop..].starts_with('[') {
            break;
        }
        let close = rest.find(']')?;
        let first = rest[stop + 1..close].split([',', '-']).next()?.trim();
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        host.push_str(first);
        rest = &rest[close + 1..];
    }
    (!host.is_empty()).then_some(host)
}

impl LaunchArgs {
    /// This process's role: a worker when torchrun's environment is set, or when it is a task of a
    /// Slurm step of several tasks (the flags are then ignored, which is what lets [`launch_local`]
    /// rerun the same command line), else a launcher when more than one process is asked for, else a
    /// single process.
    pub fn role(&self) -> Result<Role, DistError> {
        if let Some(env) = worker_env(|k| std::env::var(k).ok())? {
            return Ok(Role::Worker(env));
        }
        if let Some(env) = slurm_env(|k| std::env::var(k).ok())? {
            return Ok(Role::Worker(env));
        }
        if self.nproc_per_node == 0 || self.nnodes == 0 || self.node_rank >= self.nnodes {
            return Err(DistError::Invalid(format!(
                "--nproc-per-node {} --nnodes {} --node-rank {}: need at least one process and node, and a node rank below --nnodes",
                self.nproc_per_node, self.nnodes, self.node_rank
            )));
        }
        Ok(if self.nproc_per_node * self.nnodes > 1 { Role::Launcher } else { Role::Single })
    }

    /// The environment of local worker `local_rank`.
    fn worker_vars(&self, local_rank: usize) -> Vec<(&'static str, String)> {
        vec![
            ("WORLD_SIZE", (self.nproc_per_node * self.nnodes).to_string()),
            ("RANK", (self.node_rank * self.nproc_per_node + local_rank).to_string()),
            ("LOCAL_RANK", local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.nproc_per_node.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }
}

/// Runs this command line again as `nproc_per_node` local workers and waits for them; when one fails,
/// the others are stopped (as torchrun does). Returns the first non-zero exit code, or 0.
pub fn launch_local(args: &LaunchArgs) -> Result<i32, DistError> {
    let exe = std::env::current_exe()
        .map_err(|e| DistError::Invalid(format!("cannot find this program to start its workers: {e}")))?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let threads = (std::thread::available_parallelism().map_or(1, |n| n.get()) / args.nproc_per_node).max(1);
    let mut children: Vec<Child> = Vec::with_capacity(args.nproc_per_node);
    for local_rank in 0..args.nproc_per_node {
        let mut cmd = Command::new(&exe);
        cmd.args(&argv).envs(args.worker_vars(local_rank));
        // Each worker gets its share of the cores unless the user chose (torchrun sets 1).
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            cmd.env("OMP_NUM_THREADS", threads.to_string());
        }
        match cmd.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                stop_all(&mut children);
                return Err(DistError::Invalid(format!("cannot start worker {local_rank}: {e}")));
            }
        }
    }
    wait_all(children)
}

/// Waits for every child; on the first failure stops the others and returns its code.
fn wait_all(mut children: Vec<Child>) -> Result<i32, DistError> {
    let mut running: Vec<bool> = vec![true; children.len()];
    while running.iter().any(|r| *r) {
        for (i, child) in children.iter_mut().enumerate() {
            if !running[i] {
                continue;
            }
            match child.try_wait() {
                Ok(Some(status)) if status.success() => running[i] = false,
                Ok(Some(status)) => {
                    let code = status.code().unwrap_or(1);
                    eprintln!("launcher: local worker {i} exited with {status}; stopping the others");
                    stop_all(&mut children);
                    return Ok(if code == 0 { 1 } else { code });
                }
                Ok(None) => {}
                Err(e) => {
                    stop_all(&mut children);
                    return Err(DistError::Invalid(format!("waiting for worker {i}: {e}")));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(0)
}

fn stop_all(children: &mut [Child]) {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn torchrun_variables_make_a_worker() {
        let vars = [
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29400"),
        ];
        let w = worker_env(env(&vars)).ok().flatten();
        assert_eq!(
            w,
            Some(WorkerEnv {
                rank: 3,
                local_rank: 1,
                world_size: 4,
                master_addr: "10.0.0.1".into(),
                master_port: 29400
            })
        );
        assert_eq!(worker_env(env(&[])).ok(), Some(None));
    }

    #[test]
    fn inconsistent_variables_are_one_line_errors() {
        let no_rank = [("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")];
        assert!(worker_env(env(&no_rank)).is_err_and(|e| e.to_string().contains("RANK")));
        let rank_too_big = [("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "1")];
        assert!(worker_env(env(&rank_too_big)).is_err_and(|e| e.to_string().contains("RANK=2")));
        let bad_port = [("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "70000")];
        assert!(worker_env(env(&bad_port)).is_err_and(|e| e.to_string().contains("MASTER_PORT=70000")));
    }

    #[test]
    fn a_slurm_step_of_several_tasks_makes_a_worker() {
        let step = [
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "5"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_NTASKS", "16"),
            ("SLURM_STEP_NODELIST", "gpu[007-010,15],cpu3"),
        ];
        let w = slurm_env(env(&step)).ok().flatten();
        let want =
            WorkerEnv { rank: 5, local_rank: 1, world_size: 8, master_addr: "gpu007".into(), master_port: 29500 };
        assert_eq!(w, Some(want));
        // torchrun's rendezvous variables win when the job script sets them.
        let mut with_master = step.to_vec();
        with_master.extend([("MASTER_ADDR", "10.1.2.3"), ("MASTER_PORT", "12345")]);
        let w = slurm_env(env(&with_master)).ok().flatten().map(|w| (w.master_addr, w.master_port));
        assert_eq!(w, Some(("10.1.2.3".to_string(), 12345)));
    }

    #[test]
    fn a_batch_script_or_a_one_task_step_is_one_process() {
        // sbatch's own shell has SLURM_PROCID and SLURM_NTASKS but is not a step.
        let batch = [("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_NODELIST", "n[1-4]")];
        assert_eq!(slurm_env(env(&batch)).ok(), Some(None));
        let one = [("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1")];
        assert_eq!(slurm_env(env(&one)).ok(), Some(None));
        let bad = [("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "4"), ("SLURM_STEP_NUM_TASKS", "4")];
        assert!(slurm_env(env(&bad)).is_err_and(|e| e.to_string().contains("SLURM_PROCID=4")));
        let no_host = [("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "2")];
        assert!(slurm_env(env(&no_host)).is_err_and(|e| e.to_string().contains("MASTER_ADDR")));
    }

    #[test]
    fn first_host_of_slurm_host_lists() {
        assert_eq!(first_host("node1").as_deref(), Some("node1"));
        assert_eq!(first_host("node1,node2").as_deref(), Some("node1"));
        assert_eq!(first_host("gnode[10,20,25]").as_deref(), Some("gnode10"));
        assert_eq!(first_host("n[001-004],m[1-2]").as_deref(), Some("n001"));
        assert_eq!(first_host("rack[2-3]-n[05-06]").as_deref(), Some("rack2-n05"));
        assert_eq!(first_host(""), None);
        assert_eq!(first_host("n[x-y]"), None);
        assert_eq!(first_host("n[1-2"), None);
    }

    #[test]
    fn launcher_numbers_ranks_node_by_node() {
        let args = LaunchArgs { nproc_per_node: 2, nnodes: 2, node_rank: 1, ..LaunchArgs::default() };
        let vars: HashMap<&str, String> = args.worker_vars(1).into_iter().collect();
        assert_eq!(vars["WORLD_SIZE"], "4");
        assert_eq!(vars["RANK"], "3");
        assert_eq!(vars["LOCAL_RANK"], "1");
        assert_eq!(vars["MASTER_PORT"], "29500");
    }
}
