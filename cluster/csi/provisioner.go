package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// exportProvisioner makes each volume a directory of the export, on the
// server's side (the host), and names it in a CSI PersistentVolume that every
// node's plugin resolves under its own client.
type exportProvisioner struct {
	export string
}

func (p exportProvisioner) Provision(_ context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	if opts.PVC.Spec.Selector != nil {
		return nil, controller.ProvisioningFinished, fmt.Errorf("claim selectors are not supported")
	}
	for _, m := range opts.PVC.Spec.AccessModes {
		if m != v1.ReadWriteMany && m != v1.ReadWriteOnce && m != v1.ReadOnlyMany && m != v1.ReadWriteOncePod {
			return nil, controller.ProvisioningFinished, fmt.Errorf("access mode %s is not supported", m)
		}
	}
	if !validID(opts.PVName) {
		return nil, controller.ProvisioningFinished, fmt.Errorf("PV name %q is no directory name", opts.PVName)
	}
	dir := filepath.Join(p.export, opts.PVName)
	if err := os.Mkdir(dir, 0o777); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, controller.ProvisioningInBackground, fmt.Errorf("making %s: %w", dir, err)
	}
	// Any user of any node may write: every sshfs client acts as the server's one
	// account anyway (no default_permissions), the mode only says so.
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, controller.ProvisioningInBackground, fmt.Errorf("chmod %s: %w", dir, err)
	}
	size := opts.PVC.Spec.Resources.Requests[v1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	log.Printf("provisioned %s for %s/%s: %s (%v)", opts.PVName, opts.PVC.Namespace, opts.PVC.Name, dir, opts.PVC.Spec.AccessModes)
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   opts.PVC.Spec.AccessModes,
			MountOptions:                  opts.StorageClass.MountOptions,
			VolumeMode:                    opts.PVC.Spec.VolumeMode,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: size},
			PersistentVolumeSource: v1.PersistentVolumeSource{
				CSI: &v1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: opts.PVName},
			},
			// No node affinity: every node reaches the export through its own client.
		},
	}, controller.ProvisioningFinished, nil
}

func (p exportProvisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName {
		return &controller.IgnoredError{Reason: "not a volume of " + DriverName}
	}
	id := pv.Spec.CSI.VolumeHandle
	if !validID(id) {
		return fmt.Errorf("volume handle %q is no directory name", id)
	}
	dir := filepath.Join(p.export, id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	log.Printf("deleted %s: removed %s", pv.Name, dir)
	return nil
}

func runProvisioner(args []string) error {
	fs := flag.NewFlagSet("provisioner", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "the cluster's kubeconfig")
	export := fs.String("export", "", "the SFTP server's export directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *kubeconfig == "" || *export == "" {
		return fmt.Errorf("provisioner: --kubeconfig and --export are required")
	}
	if st, err := os.Stat(*export); err != nil || !st.IsDir() {
		return fmt.Errorf("provisioner: export %s is not a directory: %v", *export, err)
	}
	log.SetPrefix("podshare-sshfs-csi provisioner: ")
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("provisioner: %w", err)
	}
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return fmt.Errorf("provisioner: %w", err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	pc := controller.NewProvisionController(ctx, client, DriverName, exportProvisioner{export: *export},
		controller.LeaderElection(false), // one provisioner, recorded by pid
		controller.FailedProvisionThreshold(5))
	log.Printf("provisioning %s volumes under %s", DriverName, *export)
	pc.Run(ctx)
	log.Printf("stopped")
	return nil
}
