# One customer-managed key per environment: EBS volumes, the archive bucket, flow logs, DocumentDB.
# It lives outside the modules because the archive bucket (kept by `ca4-destroy`) depends on it.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:Key policy: resources "*" means this key only; the account root delegates to IAM, as AWS's default key policy does.
  #checkov:skip=CKV_AWS_356:Key policy: resources "*" means this key only (a key policy cannot name its own ARN before creation).
  #checkov:skip=CKV_AWS_109:Key policy: the account root must keep kms:* or the key becomes unmanageable (AWS default key policy).
  statement {
    sid       = "AccountAdministersKeyThroughIAM"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means "this key"
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogsEncryptsCa4LogGroups"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.aws_region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.aws_region}:${data.aws_caller_identity.current.account_id}:log-group:/ca4/*"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "CA4 ${var.environment}: EBS, S3 archive, flow logs, DocumentDB"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "this" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.this.key_id
}
