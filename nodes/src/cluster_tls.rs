//! Mutual TLS for the cluster port (rustls, the TLS stack ractor_cluster is built on): every
//! member presents a certificate signed by the deployment's CA and accepts only peers that do.
//! The cookie handshake still runs inside the TLS session.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig, crypto};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::ClusterTls;

/// Both sides of a member's TLS: accepting peers that dial in, and dialling peers.
#[derive(Clone)]
pub struct ClusterTlsContext {
    pub acceptor: TlsAcceptor,
    pub connector: TlsConnector,
}

impl ClusterTlsContext {
    /// Loads the CA, certificate chain and key; fails with the file at fault.
    pub fn load(files: &ClusterTls) -> anyhow::Result<ClusterTlsContext> {
        let provider = Arc::new(crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        for ca in certs(&files.ca)? {
            roots.add(ca).with_context(|| format!("{}: not a usable CA certificate", files.ca.display()))?;
        }
        let roots = Arc::new(roots);
        let chain = certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .with_context(|| format!("{}: no private key in PEM form", files.key.display()))?;

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("cannot build the client-certificate verifier")?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .with_context(|| {
                format!("{} / {}: certificate and key do not match", files.cert.display(), files.key.display())
            })?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .context("cannot use the node certificate as a client certificate")?;
        Ok(ClusterTlsContext {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// The name a peer's certificate must carry: its configured host (an IP address or DNS name).
pub fn server_name(host: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(host.to_owned()).with_context(|| format!("`{host}` is not a valid TLS server name"))
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in it", path.display());
    Ok(certs)
}
