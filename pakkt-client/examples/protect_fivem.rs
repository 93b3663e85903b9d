//! Protects a FiveM server with the marketplace's FiveM Shield template.
//!
//! ```text
//! PAKKT_URL=… PAKKT_API_KEY=… cargo run -p pakkt-client --example protect_fivem -- AGENT_ID
//! ```

use pakkt_client::{AppliedTemplate, Client, Error};
use pakkt_core::template::Category;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pakkt = Client::builder(std::env::var("PAKKT_URL")?, std::env::var("PAKKT_API_KEY")?).build()?;
    let agent = std::env::args().nth(1).ok_or("usage: protect_fivem AGENT_ID")?.parse()?;
    let gaming = pakkt.list_templates(Some(Category::Gaming)).await?;
    let shield = gaming.iter().find(|t| t.id == "tpl_fivem_shield").ok_or("no FiveM Shield in the marketplace")?;
    println!("{}: {} (risk {:?})", shield.title, shield.description, shield.risk);
    match pakkt.apply_template(agent, &shield.id).await {
        Ok(AppliedTemplate::Engine(rule)) => {
            println!(
                "rule {} on ports {}-{} is {:?}",
                rule.id, rule.port_range_start, rule.port_range_end, rule.status
            );
        }
        Ok(AppliedTemplate::Firewall(rule)) => println!("firewall rule {} is {:?}", rule.id, rule.status),
        Err(Error::Conflict { message }) => println!("already protected: {message}"),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}
