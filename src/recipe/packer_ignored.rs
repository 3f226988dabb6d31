//! Packer options bakehouse accepts and ignores, each with the reason the
//! warning gives ("ignored: <why>"). Anything neither mapped (see
//! [`super::packer`]) nor listed here is an unknown field.

/// Why communicator settings do not apply.
const NO_SSH: &str = "bakehouse drives the builder through SSM, not SSH or WinRM";
/// Why credential and endpoint settings do not apply.
const SDK_CONFIG: &str = "AWS credentials, endpoints and retries come from the standard AWS configuration of the function or CLI (AWS_PROFILE, AWS_ENDPOINT_URL_EC2, ...)";
/// Why validation switches do not apply.
const NO_VALIDATION_SWITCH: &str = "bakehouse validates regions and the source image itself";
/// Why spot and capacity settings do not apply.
const ON_DEMAND: &str = "builders run on demand in the default capacity";
/// Why AMI details bakehouse sets itself do not apply.
const CAPTURE_OWN: &str = "bakehouse sets this on the images it captures";

/// amazon-ebs options that are accepted and ignored.
pub(crate) const AMAZON_EBS: &[(&str, &str)] = &[
    ("access_key", SDK_CONFIG),
    ("secret_key", SDK_CONFIG),
    ("token", SDK_CONFIG),
    ("profile", SDK_CONFIG),
    ("assume_role", SDK_CONFIG),
    ("shared_credentials_file", SDK_CONFIG),
    ("vault_aws_engine", SDK_CONFIG),
    ("mfa_code", SDK_CONFIG),
    ("custom_endpoint_ec2", SDK_CONFIG),
    ("insecure_skip_tls_verify", SDK_CONFIG),
    ("max_retries", SDK_CONFIG),
    (
        "aws_polling",
        "bakehouse waits with the state machine's own schedule",
    ),
    ("decode_authorization_messages", SDK_CONFIG),
    ("skip_region_validation", NO_VALIDATION_SWITCH),
    ("skip_metadata_api_check", SDK_CONFIG),
    ("skip_credential_validation", NO_VALIDATION_SWITCH),
    ("skip_profile_validation", NO_VALIDATION_SWITCH),
    ("ssh_username", NO_SSH),
    ("ssh_password", NO_SSH),
    ("ssh_port", NO_SSH),
    ("ssh_timeout", NO_SSH),
    ("ssh_keypair_name", NO_SSH),
    ("ssh_private_key_file", NO_SSH),
    ("ssh_agent_auth", NO_SSH),
    ("ssh_interface", NO_SSH),
    ("ssh_pty", NO_SSH),
    ("ssh_handshake_attempts", NO_SSH),
    (
        "ssh_clear_authorized_keys",
        "clean removes authorized_keys unless the recipe keeps them",
    ),
    ("ssh_bastion_host", NO_SSH),
    ("ssh_bastion_username", NO_SSH),
    ("ssh_bastion_private_key_file", NO_SSH),
    ("temporary_key_pair_name", NO_SSH),
    ("temporary_key_pair_type", NO_SSH),
    ("temporary_security_group_source_cidrs", NO_SSH),
    ("temporary_security_group_source_public_ip", NO_SSH),
    ("associate_public_ip_address", NO_SSH),
    ("pause_before_ssm", NO_SSH),
    ("session_manager_port", NO_SSH),
    ("winrm_username", NO_SSH),
    ("winrm_password", NO_SSH),
    ("winrm_timeout", NO_SSH),
    ("winrm_use_ssl", NO_SSH),
    ("winrm_insecure", NO_SSH),
    ("winrm_port", NO_SSH),
    ("windows_password_timeout", NO_SSH),
    ("start_retry_timeout", NO_SSH),
    ("vpc_id", "the subnet decides the VPC"),
    ("vpc_filter", "give subnet_id; filters are not resolved"),
    ("subnet_filter", "give subnet_id; filters are not resolved"),
    (
        "security_group_filter",
        "give security_group_ids; filters are not resolved",
    ),
    ("availability_zone", "the subnet decides the zone"),
    ("spot_price", ON_DEMAND),
    ("spot_price_auto_product", ON_DEMAND),
    ("spot_instance_types", ON_DEMAND),
    ("spot_tags", ON_DEMAND),
    ("spot_allocation_strategy", ON_DEMAND),
    ("block_duration_minutes", ON_DEMAND),
    ("capacity_reservation_preference", ON_DEMAND),
    ("capacity_reservation_id", ON_DEMAND),
    ("capacity_reservation_group_arn", ON_DEMAND),
    ("fleet_tags", ON_DEMAND),
    ("placement", ON_DEMAND),
    ("tenancy", ON_DEMAND),
    ("ebs_optimized", "the instance type's default applies"),
    (
        "enable_unlimited_credits",
        "the instance type's default applies",
    ),
    ("enable_t2_unlimited", "the instance type's default applies"),
    (
        "enable_nitro_enclave",
        "the instance type's default applies",
    ),
    (
        "disable_stop_instance",
        "clean always stops the builder before capture",
    ),
    ("shutdown_behavior", "builders are terminated by teardown"),
    (
        "user_data",
        "builders boot the source image unchanged; provision with provisioners",
    ),
    (
        "user_data_file",
        "builders boot the source image unchanged; provision with provisioners",
    ),
    (
        "metadata_options",
        "builders use the source image's instance metadata settings",
    ),
    (
        "temporary_iam_instance_profile_policy_document",
        "the builder profile is the deployment's (BuilderInstanceProfile)",
    ),
    ("license_specifications", "not supported for builders"),
    (
        "run_volume_tags",
        "the builder's volumes are deleted with it",
    ),
    ("no_ephemeral", "builders get the source image's devices"),
    ("ami_virtualization_type", CAPTURE_OWN),
    (
        "ami_groups",
        "share with accounts (ami_users / publish.accounts)",
    ),
    (
        "ami_org_arns",
        "share with accounts (ami_users / publish.accounts)",
    ),
    (
        "ami_ou_arns",
        "share with accounts (ami_users / publish.accounts)",
    ),
    ("ami_product_codes", CAPTURE_OWN),
    ("ami_block_device_mappings", CAPTURE_OWN),
    ("ena_support", CAPTURE_OWN),
    ("sriov_support", CAPTURE_OWN),
    ("boot_mode", CAPTURE_OWN),
    ("uefi_data", CAPTURE_OWN),
    ("tpm_support", CAPTURE_OWN),
    ("imds_support", CAPTURE_OWN),
    (
        "snapshot_tags",
        "snapshots get the image's tags (publish.tags)",
    ),
    (
        "snapshot_users",
        "snapshots are shared with the image's accounts",
    ),
    (
        "snapshot_groups",
        "snapshots are shared with the image's accounts",
    ),
    (
        "region_kms_key_ids",
        "copies are encrypted with each region's default EBS key",
    ),
    (
        "skip_save_build_region",
        "the build region always keeps an image",
    ),
    (
        "force_deregister",
        "every version gets a new image; retention (retain:) removes old ones",
    ),
    (
        "force_delete_snapshot",
        "every version gets a new image; retention (retain:) removes old ones",
    ),
    (
        "deprecate_at",
        "deprecation is the registry's and retain:'s (deprecate_after_days)",
    ),
    ("deregistration_protection", CAPTURE_OWN),
    ("skip_create_ami", "a build always captures an image"),
];

/// shell provisioner options that are accepted and ignored.
/// Options of Packer's `powershell` provisioner that do not apply.
pub(crate) const POWERSHELL: &[(&str, &str)] = &[
    ("elevated_user", "SSM runs commands as LocalSystem"),
    ("elevated_password", "SSM runs commands as LocalSystem"),
    (
        "elevated_execute_command",
        "commands run with powershell.exe -ExecutionPolicy Bypass",
    ),
    (
        "execute_command",
        "commands run with powershell.exe -ExecutionPolicy Bypass",
    ),
    (
        "execution_policy",
        "commands run with powershell.exe -ExecutionPolicy Bypass",
    ),
    (
        "use_pwsh",
        "Windows PowerShell (powershell.exe) runs the commands",
    ),
    ("binary", "scripts are sent inline as text"),
    (
        "debug_mode",
        "commands run with $ErrorActionPreference = 'Stop'",
    ),
    ("valid_exit_codes", "a non-zero exit code fails the build"),
    ("env_var_format", "variables are set with $env:NAME"),
    ("remote_path", "scripts are sent inline"),
    ("remote_env_var_path", "scripts are sent inline"),
    (
        "skip_clean",
        "the command's temporary directory is always removed",
    ),
    (
        "start_retry_timeout",
        "commands run through SSM; there is no connection to retry",
    ),
    (
        "pause_before",
        "provisioners run one after the other without pauses",
    ),
    (
        "pause_after",
        "provisioners run one after the other without pauses",
    ),
    ("max_retries", "a failed provisioner fails the build"),
    (
        "timeout",
        "the build's time limit (builder.time_limit_minutes) applies",
    ),
];

pub(crate) const SHELL: &[(&str, &str)] = &[
    (
        "expect_disconnect",
        "commands run through SSM or in the sandbox; there is no connection to lose",
    ),
    (
        "start_retry_timeout",
        "commands run through SSM or in the sandbox; there is no connection to retry",
    ),
    (
        "pause_before",
        "provisioners run one after the other without pauses",
    ),
    (
        "pause_after",
        "provisioners run one after the other without pauses",
    ),
    ("max_retries", "a failed provisioner fails the build"),
    (
        "timeout",
        "the build's time limit (builder.time_limit_minutes) applies",
    ),
    ("execute_command", "commands run as root with sh -e"),
    ("inline_shebang", "inline commands run with sh -e"),
    ("remote_folder", "scripts are sent inline"),
    ("remote_file", "scripts are sent inline"),
    ("remote_path", "scripts are sent inline"),
    ("skip_clean", "nothing is left on the builder to clean"),
    ("use_env_var_file", "the environment is passed directly"),
    ("env_var_format", "the environment is passed directly"),
    ("binary", "scripts are text"),
];

/// file provisioner options that are accepted and ignored.
pub(crate) const FILE: &[(&str, &str)] = &[
    (
        "pause_before",
        "provisioners run one after the other without pauses",
    ),
    ("max_retries", "a failed provisioner fails the build"),
    (
        "timeout",
        "the build's time limit (builder.time_limit_minutes) applies",
    ),
    ("generated", "sources are read when the build starts"),
];

/// Why qemu options about running the VM do not apply.
const NOT_BOOTED: &str = "provisioners run in a sandbox on the disk's files: the VM is not booted to provision (the test phase boots the output)";
/// Why qemu output options do not apply.
const LOCAL_OUTPUT: &str =
    "local builds write one compressed qcow2 under .bakehouse/images and register it";

/// qemu builder options that are accepted and ignored.
pub(crate) const QEMU: &[(&str, &str)] = &[
    ("accelerator", NOT_BOOTED),
    ("headless", NOT_BOOTED),
    ("qemuargs", NOT_BOOTED),
    ("qemu_binary", NOT_BOOTED),
    ("machine_type", NOT_BOOTED),
    ("cpu_model", NOT_BOOTED),
    ("net_device", NOT_BOOTED),
    ("net_bridge", NOT_BOOTED),
    ("disk_interface", NOT_BOOTED),
    ("disk_cache", NOT_BOOTED),
    ("disk_discard", NOT_BOOTED),
    ("disk_detect_zeroes", NOT_BOOTED),
    ("firmware", NOT_BOOTED),
    ("use_pflash", NOT_BOOTED),
    ("display", NOT_BOOTED),
    ("use_default_display", NOT_BOOTED),
    ("vnc_bind_address", NOT_BOOTED),
    ("vnc_port_min", NOT_BOOTED),
    ("vnc_port_max", NOT_BOOTED),
    ("vnc_use_password", NOT_BOOTED),
    ("boot_wait", NOT_BOOTED),
    ("boot_command", NOT_BOOTED),
    ("boot_key_interval", NOT_BOOTED),
    ("http_directory", NOT_BOOTED),
    ("http_content", NOT_BOOTED),
    ("http_port_min", NOT_BOOTED),
    ("http_port_max", NOT_BOOTED),
    ("http_bind_address", NOT_BOOTED),
    ("floppy_files", NOT_BOOTED),
    ("floppy_dirs", NOT_BOOTED),
    ("floppy_label", NOT_BOOTED),
    ("cd_files", NOT_BOOTED),
    ("cd_label", NOT_BOOTED),
    ("host_port_min", NOT_BOOTED),
    ("host_port_max", NOT_BOOTED),
    ("skip_nat_mapping", NOT_BOOTED),
    ("shutdown_command", NOT_BOOTED),
    ("shutdown_timeout", NOT_BOOTED),
    ("communicator", NOT_BOOTED),
    ("ssh_username", NOT_BOOTED),
    ("ssh_password", NOT_BOOTED),
    ("ssh_port", NOT_BOOTED),
    ("ssh_host", NOT_BOOTED),
    ("ssh_timeout", NOT_BOOTED),
    ("ssh_wait_timeout", NOT_BOOTED),
    ("ssh_private_key_file", NOT_BOOTED),
    ("ssh_agent_auth", NOT_BOOTED),
    ("ssh_pty", NOT_BOOTED),
    ("ssh_handshake_attempts", NOT_BOOTED),
    ("winrm_username", NOT_BOOTED),
    ("winrm_password", NOT_BOOTED),
    ("winrm_timeout", NOT_BOOTED),
    ("winrm_use_ssl", NOT_BOOTED),
    ("winrm_insecure", NOT_BOOTED),
    ("output_directory", LOCAL_OUTPUT),
    ("disk_compression", LOCAL_OUTPUT),
    ("skip_compaction", LOCAL_OUTPUT),
    ("use_backing_file", LOCAL_OUTPUT),
    ("disk_additional_size", LOCAL_OUTPUT),
    ("iso_target_path", "the base disk is read where it is"),
    ("iso_target_extension", "the base disk is read where it is"),
    ("iso_skip_cache", "the base disk is read where it is"),
];

/// Why staging settings do not apply.
const STAGED: &str = "trees are uploaded to a temporary directory that is removed after the run";

/// salt-masterless options that are accepted and ignored.
pub(crate) const SALT_MASTERLESS: &[(&str, &str)] = &[
    ("remote_state_tree", STAGED),
    ("remote_pillar_roots", STAGED),
    ("temp_config_dir", STAGED),
    ("clean", STAGED),
    ("disable_sudo", "commands run as root"),
    ("log_level", "salt-call's output is in the build log"),
    (
        "bootstrap_args",
        "Salt is bootstrapped from PyPI into a virtualenv",
    ),
    ("salt_bin_dir", "salt-call is run from the image's PATH"),
    ("guest_os_type", "the recipe's os says it"),
];

/// ansible-local options that are accepted and ignored.
pub(crate) const ANSIBLE_LOCAL: &[(&str, &str)] = &[
    (
        "playbook_dir",
        "the playbook's own directory (roles, group_vars, ansible.cfg) is uploaded with it",
    ),
    (
        "role_paths",
        "the playbook's own directory (roles, group_vars, ansible.cfg) is uploaded with it",
    ),
    (
        "group_vars",
        "the playbook's own directory (roles, group_vars, ansible.cfg) is uploaded with it",
    ),
    (
        "host_vars",
        "the playbook's own directory (roles, group_vars, ansible.cfg) is uploaded with it",
    ),
    ("staging_directory", STAGED),
    ("clean_staging_directory", STAGED),
    (
        "inventory_groups",
        "the play runs against localhost with -c local",
    ),
    (
        "inventory_file",
        "the play runs against localhost with -c local",
    ),
];

/// shell-local provisioner options that are accepted and ignored.
pub(crate) const SHELL_LOCAL: &[(&str, &str)] = &[
    ("execute_command", "commands run with sh -e in the sandbox"),
    ("inline_shebang", "commands run with sh -e in the sandbox"),
    ("use_linux_pathing", "the sandbox is Linux"),
    ("only_on", "the sandbox is Linux"),
    ("env_var_format", "the environment is passed directly"),
    ("use_env_var_file", "the environment is passed directly"),
];

/// The reason an ignored option is ignored, if it is one of `list`.
pub(crate) fn reason(list: &[(&'static str, &'static str)], option: &str) -> Option<&'static str> {
    list.iter().find(|(o, _)| *o == option).map(|(_, why)| *why)
}
