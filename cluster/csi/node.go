package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	registration "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type identity struct {
	csi.UnimplementedIdentityServer
}

func (identity) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: DriverName, VendorVersion: Version}, nil
}

func (identity) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{}, nil
}

// GetPluginCapabilities: none. No controller service (the provisioner makes the
// directories itself) and no topology (every node reaches the export).
func (identity) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

type node struct {
	csi.UnimplementedNodeServer
	name      string
	clientDir string
	mu        sync.Mutex // publish and unpublish one at a time
}

func (n *node) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.name}, nil
}

// NodeGetCapabilities: none, so the kubelet skips NodeStageVolume: a volume is
// a directory of the node's client, bind-mounted straight onto each target.
func (n *node) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{}, nil
}

// validID: a volume id is a PV name, one path component.
func validID(id string) bool {
	return id != "" && id != "." && id != ".." && !strings.ContainsAny(id, "/\x00")
}

// mountInfo returns the file system type and source of the mount at `path`, if any.
func mountInfo(path string) (fstype, source string, ok bool) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 64*1024), 1024*1024)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, fld := range fields {
			if fld == "-" && i+2 < len(fields) && len(fields) > 4 {
				if unescape(fields[4]) == path {
					fstype, source, ok = fields[i+1], fields[i+2], true // the last (topmost) one wins
				}
				break
			}
		}
	}
	return
}

func unescape(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

func (n *node) NodePublishVolume(_ context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id, target := req.GetVolumeId(), req.GetTargetPath()
	if !validID(id) {
		return nil, status.Errorf(codes.InvalidArgument, "volume id %q", id)
	}
	if target == "" || !filepath.IsAbs(target) {
		return nil, status.Errorf(codes.InvalidArgument, "target path %q", target)
	}
	if req.GetVolumeCapability().GetBlock() != nil {
		return nil, status.Error(codes.InvalidArgument, "block volumes are not offered")
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	source := filepath.Join(n.clientDir, id)
	// Through this node's client: the directory the provisioner made in the export.
	if st, err := os.Stat(source); err != nil || !st.IsDir() {
		return nil, status.Errorf(codes.NotFound, "volume %s: %s is not a directory of this node's client: %v", id, source, err)
	}
	if fstype, _, mounted := mountInfo(target); mounted {
		log.Printf("publish %s: %s already mounted (%s)", id, target, fstype)
		return &csi.NodePublishVolumeResponse{}, nil
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return nil, status.Errorf(codes.Internal, "mkdir %s: %v", target, err)
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return nil, status.Errorf(codes.Internal, "bind %s onto %s: %v", source, target, err)
	}
	if req.GetReadonly() {
		// A bind mount takes no MS_RDONLY at once: remount the bind read-only.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			_ = unix.Unmount(target, 0)
			return nil, status.Errorf(codes.Internal, "remount %s read-only: %v", target, err)
		}
	}
	fstype, src, _ := mountInfo(target)
	log.Printf("publish %s: %s onto %s (%s %s, readonly %v)", id, source, target, fstype, src, req.GetReadonly())
	return &csi.NodePublishVolumeResponse{}, nil
}

func (n *node) NodeUnpublishVolume(_ context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	target := req.GetTargetPath()
	if target == "" || !filepath.IsAbs(target) {
		return nil, status.Errorf(codes.InvalidArgument, "target path %q", target)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for {
		if _, _, mounted := mountInfo(target); !mounted {
			break
		}
		if err := unix.Unmount(target, 0); err != nil {
			if errors.Is(err, unix.EBUSY) {
				err = unix.Unmount(target, unix.MNT_DETACH)
			}
			if err != nil {
				return nil, status.Errorf(codes.Internal, "unmount %s: %v", target, err)
			}
		}
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.Internal, "remove %s: %v", target, err)
	}
	log.Printf("unpublish %s: %s unmounted and removed", req.GetVolumeId(), target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// registrar answers the kubelet's plugin watcher (plugins_registry).
type registrar struct {
	registration.UnimplementedRegistrationServer
	endpoint string // the CSI socket's path, as the kubelet dials it
}

func (r registrar) GetInfo(context.Context, *registration.InfoRequest) (*registration.PluginInfo, error) {
	return &registration.PluginInfo{Type: registration.CSIPlugin, Name: DriverName, Endpoint: r.endpoint,
		SupportedVersions: []string{"1.0.0"}}, nil
}

func (r registrar) NotifyRegistrationStatus(_ context.Context, s *registration.RegistrationStatus) (*registration.RegistrationStatusResponse, error) {
	if s.GetPluginRegistered() {
		log.Printf("registered with the kubelet")
	} else {
		log.Printf("the kubelet refused the registration: %s", s.GetError())
	}
	return &registration.RegistrationStatusResponse{}, nil
}

func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		log.Printf("%s: %v", info.FullMethod, err)
	}
	return resp, err
}

func runNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	name := fs.String("node-name", "", "this node's name (NodeGetInfo's node id)")
	endpoint := fs.String("endpoint", "", "the CSI socket, unix://PATH under the kubelet's plugins dir")
	regDir := fs.String("registration-dir", "", "the kubelet's plugins_registry")
	clientDir := fs.String("client-dir", "", "this node's sshfs client of the export")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" || *endpoint == "" || *regDir == "" || *clientDir == "" {
		return fmt.Errorf("node: --node-name, --endpoint, --registration-dir and --client-dir are all required")
	}
	sock := strings.TrimPrefix(*endpoint, "unix://")
	if !filepath.IsAbs(sock) {
		return fmt.Errorf("node: --endpoint must be unix:///absolute/path, not %q", *endpoint)
	}
	if fstype, _, ok := mountInfo(*clientDir); !ok || fstype != "fuse.sshfs" {
		return fmt.Errorf("node: %s is not an sshfs mount (%q): start the shared file system first", *clientDir, fstype)
	}
	log.SetPrefix(fmt.Sprintf("podshare-sshfs-csi node %s: ", *name))

	csiListener, err := listen(sock)
	if err != nil {
		return fmt.Errorf("node: listening on %s: %w", sock, err)
	}
	csiServer := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(csiServer, identity{})
	csi.RegisterNodeServer(csiServer, &node{name: *name, clientDir: *clientDir})

	// The registration socket last: once it exists the kubelet dials the CSI one.
	regSock := filepath.Join(*regDir, DriverName+"-reg.sock")
	regListener, err := listen(regSock)
	if err != nil {
		csiListener.Close()
		os.Remove(sock)
		return fmt.Errorf("node: listening on %s: %w", regSock, err)
	}
	regServer := grpc.NewServer()
	registration.RegisterRegistrationServer(regServer, registrar{endpoint: sock})

	errs := make(chan error, 2)
	go func() { errs <- csiServer.Serve(csiListener) }()
	go func() { errs <- regServer.Serve(regListener) }()
	log.Printf("serving CSI on %s, registration on %s, volumes under %s", sock, regSock, *clientDir)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var result error
	select {
	case s := <-stop:
		log.Printf("%s: stopping", s)
	case result = <-errs:
	}
	// The registration socket first: the kubelet deregisters the driver when it goes.
	regServer.Stop()
	os.Remove(regSock)
	csiServer.GracefulStop()
	os.Remove(sock)
	os.Remove(filepath.Dir(sock))
	return result
}
