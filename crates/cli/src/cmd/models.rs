use clap::Subcommand;

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// List the known short model names.
    List,
}

pub fn run(cmd: ModelsCmd) -> anyhow::Result<()> {
    match cmd {
        ModelsCmd::List => {
            println!("smollm2-135m\nminilm-l6");
            Ok(())
        }
    }
}
