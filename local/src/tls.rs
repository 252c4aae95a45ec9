//! HTTPS for the local gateway: boto3 refuses to send a Bedrock API key over plain HTTP, so the stack
//! serves TLS with a self-signed certificate made at start (the path is printed and written to the state
//! file, for SDKs' CA-bundle settings).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::resources::BoxError;

pub struct Certificate {
    pub cert_path: PathBuf,
    pub acceptor: TlsAcceptor,
}

pub fn self_signed(dir: &Path) -> Result<Certificate, BoxError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    std::fs::create_dir_all(dir)?;
    let cert_path = dir.join("cert.pem");
    std::fs::write(&cert_path, certified.cert.pem())?;
    let cert_der: CertificateDer<'static> = certified.cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Certificate {
        cert_path,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

/// Accepts TLS connections forever, serving the same router as the plain-HTTP port.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "TLS accept failed");
                continue;
            }
        };
        // As on the plain port: no Nagle stall on small writes (see `no_delay` in main.rs).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(ConnectInfo::<SocketAddr>(peer));
                    let mut router = router.clone();
                    async move { router.call(request.map(axum::body::Body::new)).await }
                },
            );
            if let Err(error) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%error, %peer, "TLS connection ended with an error");
            }
        });
    }
}
