//! Listening ports: a start refuses a port that is taken, naming the port and the setting that moves it,
//! instead of failing with a bare "address in use" (or, for moto, silently talking to a stale server).

use std::io;

use tokio::net::TcpListener;

use crate::resources::BoxError;

/// What a start says when `port` is taken.
pub fn in_use(port: u16, setting: &str) -> String {
    format!(
        "port {port} ({setting}) is already in use; stop whatever listens there or choose another port"
    )
}

fn describe(host: &str, port: u16, setting: &str, error: io::Error) -> BoxError {
    if error.kind() == io::ErrorKind::AddrInUse {
        in_use(port, setting).into()
    } else {
        format!("cannot listen on {host}:{port} ({setting}): {error}").into()
    }
}

/// Checks that `host:port` can be listened on by binding it and releasing it at once; for a port a child
/// process (moto) will bind, whose own bind failure the stack would not see.
pub fn ensure_free(host: &str, port: u16, setting: &str) -> Result<(), BoxError> {
    std::net::TcpListener::bind((host, port))
        .map(drop)
        .map_err(|error| describe(host, port, setting, error))
}

/// Listens on `host:port`, or says which setting moves a taken port.
pub async fn bind(host: &str, port: u16, setting: &str) -> Result<TcpListener, BoxError> {
    TcpListener::bind((host, port))
        .await
        .map_err(|error| describe(host, port, setting, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused_with_the_port_and_its_setting() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = ensure_free("127.0.0.1", port, "GATEWAY_LOCAL_MOTO_PORT").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "port {port} (GATEWAY_LOCAL_MOTO_PORT) is already in use; stop whatever listens there \
                 or choose another port"
            )
        );
    }

    #[test]
    fn a_free_port_passes_and_stays_free() {
        let port = {
            let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            probe.local_addr().unwrap().port()
        };
        ensure_free("127.0.0.1", port, "GATEWAY_LOCAL_MOTO_PORT").unwrap();
        // Released again: the child that needs it can bind it.
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[tokio::test]
    async fn bind_names_the_setting_of_a_taken_port() {
        let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = bind("127.0.0.1", port, "GATEWAY_LOCAL_HTTP_PORT")
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), in_use(port, "GATEWAY_LOCAL_HTTP_PORT"));
    }

    #[test]
    fn other_bind_errors_name_the_address_and_setting() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this machine.
        let error = ensure_free("192.0.2.1", 4080, "GATEWAY_LOCAL_HTTP_PORT").unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("cannot listen on 192.0.2.1:4080 (GATEWAY_LOCAL_HTTP_PORT): "),
            "{message}"
        );
    }
}
