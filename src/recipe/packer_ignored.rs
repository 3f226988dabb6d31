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

/// The reason an ignored option is ignored, if it is one of `list`.
pub(crate) fn reason(list: &[(&'static str, &'static str)], option: &str) -> Option<&'static str> {
    list.iter().find(|(o, _)| *o == option).map(|(_, why)| *why)
}
