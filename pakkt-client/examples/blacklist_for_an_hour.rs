//! Blacklists an address (or prefix) on an agent for one hour.
//!
//! ```text
//! PAKKT_URL=… PAKKT_API_KEY=… cargo run -p pakkt-client --example blacklist_for_an_hour -- AGENT_ID 203.0.113.42
//! ```

use pakkt_client::Client;
use pakkt_core::ip_list::ListType;
use pakkt_core::wire::CreateIpEntryRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pakkt = Client::builder(std::env::var("PAKKT_URL")?, std::env::var("PAKKT_API_KEY")?).build()?;
    let mut args = std::env::args().skip(1);
    let (Some(agent), Some(ip)) = (args.next(), args.next()) else {
        return Err("usage: blacklist_for_an_hour AGENT_ID ADDRESS".into());
    };
    let entry = CreateIpEntryRequest {
        list_type: ListType::Blacklist,
        ip_address: ip,
        reason: Some("blacklisted for an hour from the SDK example".into()),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
    };
    let created = pakkt.add_ip_entry(agent.parse()?, &entry).await?;
    println!("entry {} is {:?}", created.id, created.status);
    Ok(())
}
