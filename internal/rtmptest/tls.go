package rtmptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// tlsStream is nginx's stream block terminating TLS: %[1]s is where it
// listens, %[2]s the nginx-rtmp it passes the bytes to.
const tlsStream = `stream {
    server {
        listen %%[1]s ssl;
        ssl_certificate %[1]s;
        ssl_certificate_key %[2]s;
        proxy_pass %%[2]s;
    }
}`

// StartTLS runs nginx-rtmp with TLS in front of it (rtmps), as platforms
// serve it: TLSURL takes publishes, URL is the same server in the clear.
// Its certificate, for 127.0.0.1, is signed by a private CA made for the
// test (CAFile, in a directory whose name holds a ":", which ffmpeg's
// option syntax must escape).
func StartTLS(t testing.TB) *Server {
	t.Helper()
	Require(t, "nginx")
	if _, err := os.Stat(StreamModule); err != nil {
		missing(t, "libnginx-mod-stream", err)
	}
	dir := t.TempDir()
	s := &Server{Dir: dir, RecDir: filepath.Join(dir, "rec")}
	certs := filepath.Join(dir, "tls:certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	s.CAFile = filepath.Join(certs, "ca.pem")
	cert, key := filepath.Join(certs, "cert.pem"), filepath.Join(certs, "key.pem")
	if err := writeCerts(s.CAFile, cert, key); err != nil {
		t.Fatal(err)
	}
	s.tls = fmt.Sprintf(tlsStream, cert, key)
	if _, err := launch(s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	return s
}

// writeCerts makes a CA and a server certificate for 127.0.0.1 signed by
// it, as PEM files.
func writeCerts(caFile, certFile, keyFile string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rtmptest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{{caFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.name, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}
