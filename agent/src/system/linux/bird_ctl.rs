//! The socket half of BIRD's control protocol: connect, send one command,
//! read its reply, each within a timeout. What the lines mean (codes, rows,
//! capabilities) is [`crate::bgp::control`]'s, which has no I/O.

use std::io;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::bgp::control::{
    self as proto, BfdSession, BgpDetail, BgpState, ConfigureOutcome, ControlError, ProtocolStatus,
    Reply, ReplyBuilder,
};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct BirdClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    /// Greeting text, e.g. `BIRD 2.0.12 ready.`.
    pub greeting: String,
}

impl BirdClient {
    /// Connects and reads the greeting, each within [`DEFAULT_TIMEOUT`].
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        Self::connect_with_timeout(path, DEFAULT_TIMEOUT).await
    }

    pub async fn connect_with_timeout(
        path: &Path,
        timeout: Duration,
    ) -> Result<Self, ControlError> {
        let connect = |source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        };
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| connect(io::Error::new(io::ErrorKind::TimedOut, "timed out")))?
            .map_err(connect)?;
        let (r, w) = stream.into_split();
        let mut client = BirdClient {
            reader: BufReader::new(r),
            writer: w,
            timeout,
            greeting: String::new(),
        };
        let hello = client.read_reply("the greeting").await?;
        client.greeting = proto::greeting(&hello)?;
        Ok(client)
    }

    /// Sends one command and reads its reply. A reply containing a code >= 8000 is an error
    /// carrying BIRD's text.
    pub async fn command(&mut self, cmd: &str) -> Result<Reply, ControlError> {
        proto::check_command(cmd)?;
        let line = format!("{cmd}\n");
        tokio::time::timeout(self.timeout, self.writer.write_all(line.as_bytes()))
            .await
            .map_err(|_| ControlError::Timeout {
                what: cmd.to_string(),
                timeout: self.timeout,
            })??;
        let reply = self.read_reply(cmd).await?;
        proto::reply_result(cmd, reply)
    }

    async fn read_reply(&mut self, what: &str) -> Result<Reply, ControlError> {
        let timeout = self.timeout;
        let read = async {
            let mut b = ReplyBuilder::default();
            let mut buf = String::new();
            loop {
                buf.clear();
                if self.reader.read_line(&mut buf).await? == 0 {
                    return Err(ControlError::Closed(what.to_string()));
                }
                let line = buf.strip_suffix('\n').unwrap_or(&buf);
                if b.push(proto::parse_reply_line(line)?)? {
                    return Ok(b.finish());
                }
            }
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ControlError::Timeout {
                what: what.to_string(),
                timeout,
            })?
    }

    pub async fn show_protocols(&mut self) -> Result<Vec<ProtocolStatus>, ControlError> {
        Ok(proto::parse_protocols(
            &self.command("show protocols").await?,
        ))
    }

    /// Status of one protocol, [`ControlError::NoSuchProtocol`] if BIRD has none by that name.
    pub async fn protocol(&mut self, name: &str) -> Result<ProtocolStatus, ControlError> {
        let reply = self
            .command(&proto::protocol_command(name)?)
            .await
            .map_err(|e| proto::no_such_protocol(e, name))?;
        proto::find_protocol(&reply, name)
    }

    /// BGP state of one BGP protocol.
    pub async fn bgp_state(&mut self, protocol: &str) -> Result<BgpState, ControlError> {
        let p = self.protocol(protocol).await?;
        p.bgp_state()
            .ok_or_else(|| ControlError::InvalidArgument(format!("{protocol} is a {}", p.proto)))
    }

    /// Re-reads the config file BIRD was started with (`configure`).
    pub async fn configure(&mut self) -> Result<ConfigureOutcome, ControlError> {
        Ok(ConfigureOutcome::from_reply(
            &self.command("configure").await?,
        ))
    }

    /// Asks the running BIRD to parse its config file without applying it (`configure check`,
    /// reply 0020). A file that does not parse is `Err` with code 8002.
    pub async fn configure_check(&mut self) -> Result<(), ControlError> {
        let reply = self.command("configure check").await?;
        match reply.final_code() {
            Some(20) => Ok(()),
            _ => Err(ControlError::Protocol(format!("{:?}", reply.lines))),
        }
    }

    /// Networks that pass the export filter of `protocol` (`show route export <p>`, which works
    /// on BIRD 2.0.12 as does `exported`).
    pub async fn exported_prefixes(&mut self, protocol: &str) -> Result<Vec<IpNet>, ControlError> {
        self.protocol_routes("export", protocol).await
    }

    /// Networks imported by `protocol` (`show route protocol <p>`), e.g. what a peer sent.
    pub async fn imported_prefixes(&mut self, protocol: &str) -> Result<Vec<IpNet>, ControlError> {
        self.protocol_routes("protocol", protocol).await
    }

    /// State and negotiated capabilities of one BGP protocol (`show protocols all`).
    pub async fn bgp_detail(&mut self, name: &str) -> Result<BgpDetail, ControlError> {
        let reply = self
            .command(&proto::protocol_detail_command(name)?)
            .await
            .map_err(|e| proto::no_such_protocol(e, name))?;
        proto::find_protocol(&reply, name)?;
        Ok(proto::parse_bgp_detail(&reply))
    }

    /// BFD sessions of every BFD protocol (`show bfd sessions`).
    pub async fn bfd_sessions(&mut self) -> Result<Vec<BfdSession>, ControlError> {
        Ok(proto::parse_bfd_sessions(
            &self.command("show bfd sessions").await?,
        ))
    }

    async fn protocol_routes(
        &mut self,
        keyword: &str,
        protocol: &str,
    ) -> Result<Vec<IpNet>, ControlError> {
        let reply = self
            .command(&proto::routes_command(keyword, protocol)?)
            .await
            .map_err(|e| proto::no_such_protocol(e, protocol))?;
        Ok(proto::parse_route_prefixes(&reply))
    }
}
