package cluster

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	schedv1 "k8s.io/kube-scheduler/config/v1"

	schedconfig "github.com/vgpu-io/vgpu/cmd/extender/config"
)

func TestSchedulerConfigKeepsTestSettings(t *testing.T) {
	weight := int64(3)
	in := &schedv1.KubeSchedulerConfiguration{
		Profiles: []schedv1.KubeSchedulerProfile{{SchedulerName: ptr("vgpu-scheduler")}},
		Extenders: []schedv1.Extender{{
			URLPrefix: "https://127.0.0.1:9443/scheduler", FilterVerb: "filter", Weight: weight,
			ManagedResources: []schedv1.ExtenderManagedResource{{Name: "nvidia.com/gpu", IgnoredByScheduler: true}},
		}},
	}
	path := filepath.Join(t.TempDir(), "sched.yaml")
	if err := writeSchedulerConfig(path, in, "/k/sched.kubeconfig"); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out, err := schedconfig.Parse(raw)
	if err != nil {
		t.Fatalf("rendered config does not parse back: %v\n%s", err, raw)
	}
	if out.APIVersion != "kubescheduler.config.k8s.io/v1" || out.Kind != "KubeSchedulerConfiguration" {
		t.Errorf("type = %s %s", out.APIVersion, out.Kind)
	}
	if out.ClientConnection.Kubeconfig != "/k/sched.kubeconfig" {
		t.Errorf("kubeconfig = %q", out.ClientConnection.Kubeconfig)
	}
	if out.LeaderElection.LeaderElect == nil || *out.LeaderElection.LeaderElect {
		t.Errorf("leader election not turned off: %v", out.LeaderElection.LeaderElect)
	}
	if len(out.Extenders) != 1 || out.Extenders[0].URLPrefix != in.Extenders[0].URLPrefix ||
		len(out.Extenders[0].ManagedResources) != 1 || !out.Extenders[0].ManagedResources[0].IgnoredByScheduler {
		t.Errorf("extender lost: %+v", out.Extenders)
	}
	if len(out.Profiles) != 1 || *out.Profiles[0].SchedulerName != "vgpu-scheduler" {
		t.Errorf("profiles lost: %+v", out.Profiles)
	}
	if in.ClientConnection.Kubeconfig != "" || in.LeaderElection.LeaderElect != nil {
		t.Error("the caller's configuration was modified")
	}
}

func TestFindBinariesNamesWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvKubeBinDir, dir)
	t.Setenv(EnvEtcdBin, filepath.Join(dir, "etcd"))
	t.Setenv(EnvKwokBin, filepath.Join(dir, "kwok"))
	t.Setenv(EnvKwokStages, dir)
	_, err := FindBinaries()
	if err == nil {
		t.Fatal("FindBinaries succeeded in an empty folder")
	}
	for _, want := range []string{"kube-apiserver", "kube-scheduler", filepath.Join(dir, "etcd"), "kwok stage configs", "make tools", EnvEtcdBin} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestStopKillsTheWholeProcessGroup(t *testing.T) {
	dir := t.TempDir()
	s := newSpawner()
	defer s.close()
	// A shell that ignores SIGTERM, with a child shell (named after dir,
	// its $0) that would outlive it: stop must take both down, and
	// ProcessesUsing must see both while they run.
	p, err := s.run("sh", "/bin/sh", []string{"-c", "trap '' TERM; sh -c 'sleep 300; :' " + dir + " & wait", dir}, dir)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(ProcessesUsing(dir)) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := ProcessesUsing(dir); len(got) < 2 {
		t.Fatalf("ProcessesUsing = %v, want the shell and its sleep", got)
	}
	pgid := p.pid()
	p.stop(200 * time.Millisecond)
	if p.running() {
		t.Fatal("process still running after stop")
	}
	if m := groupMembers(pgid); len(m) > 0 {
		t.Fatalf("process group %d still has live members after stop: %v", pgid, m)
	}
	if left := ProcessesUsing(dir); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestIssuedCertificatesChainToTheCA(t *testing.T) {
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	client, err := p.issue("user", "alice", []string{"team"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	server, err := p.issue("srv", "srv", nil, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.caCert)
	c := readCert(t, client.CertFile)
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if c.Subject.CommonName != "alice" || len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "team" {
		t.Errorf("client subject = %v", c.Subject)
	}
	if _, err := readCert(t, server.CertFile).Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"}); err != nil {
		t.Errorf("serving certificate: %v", err)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func TestProcessesUsingIgnoresTheCallerAndItsAncestors(t *testing.T) {
	if marker := os.Getenv("VGPU_TEST_MARKER"); marker != "" {
		// Child: its parent shell's command line names the marker, like
		// `make cluster-down CLUSTER_DIR=…` above `vgpu-cluster down`.
		fmt.Printf("found=%q\n", ProcessesUsing(marker))
		return
	}
	marker := t.TempDir()
	// The shell keeps running (": done" stops it from exec'ing the child),
	// so it is a live ancestor naming the marker as its $0.
	cmd := exec.Command("/bin/sh", "-c", `"$1" -test.run='^TestProcessesUsingIgnoresTheCallerAndItsAncestors$'; : done`, marker, os.Args[0])
	cmd.Env = append(os.Environ(), "VGPU_TEST_MARKER="+marker)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "found=[]") {
		t.Fatalf("ProcessesUsing counted an ancestor:\n%s", out)
	}
}

// StartProcess waits for its check, and says at once, with the log, when
// the process exits instead of becoming healthy; a check that never passes
// ends at StartTimeout with its last error.
func TestStartProcessWaitsForHealthOrExit(t *testing.T) {
	dir := t.TempDir()
	s := newSpawner()
	defer s.close()
	c := &Cluster{opts: Options{StartTimeout: 3 * time.Second, Logf: t.Logf}, spawn: s, logDir: dir, procs: map[string]*process{}}
	defer func() {
		for _, name := range []string{"slow", "crash", "stuck"} {
			c.stopProcess(name)
		}
	}()
	ctx := context.Background()

	tries := 0
	if err := c.StartProcess(ctx, "slow", "/bin/sleep", []string{"30"}, func(context.Context) error {
		if tries++; tries < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || tries != 3 {
		t.Fatalf("healthy on the third check: err %v after %d checks", err, tries)
	}

	start := time.Now()
	err := c.StartProcess(ctx, "crash", "/bin/sh", []string{"-c", "echo cannot open the socket; exit 3"}, func(context.Context) error {
		return errors.New("connection refused")
	})
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "cannot open the socket") {
		t.Errorf("error %v, want one saying it exited, with its log", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the exit was reported after %v, not at once", d)
	}

	err = c.StartProcess(ctx, "stuck", "/bin/sleep", []string{"30"}, func(context.Context) error {
		return errors.New("503 still loading")
	})
	if err == nil || !strings.Contains(err.Error(), "not healthy after 3s") || !strings.Contains(err.Error(), "503 still loading") {
		t.Errorf("error %v, want one naming the timeout and the last check", err)
	}
}
